"""RQ workers that run SPP jobs (and later training runs) with nfcore, on a GPU when there is one."""
