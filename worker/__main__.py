"""`python -m worker` starts an RQ worker (see worker.main)."""

from worker.main import main

main()
