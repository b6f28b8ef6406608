"""RQ workers that run SPP jobs and short training runs with nfcore, on a GPU when there is one."""
