"""Short training runs of nfcore's networks: the data sets and the trainer."""
