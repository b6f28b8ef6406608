"""The command line (`nfcore`): flags built from the configs' fields; it ends the loop of the layers."""
