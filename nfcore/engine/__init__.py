"""The torch engine: layers, blocks and activations, the builder of a plan's modules, the model cache, inputs, and the
SPP engine."""
