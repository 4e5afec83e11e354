"""The organism's procedural tasks; the code lives in `jaxalm.organism_tasks` (shipped with
the package for `jaxalm demo`) and is re-exported here for the training recipe."""

from jaxalm.organism_tasks import *  # noqa: F401,F403
from jaxalm.organism_tasks import main

if __name__ == "__main__":
  main()
