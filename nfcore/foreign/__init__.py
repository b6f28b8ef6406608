"""Networks of one's own: their residual blocks and layouts found from a traced forward, `measure`, their cost
counted before they are built, and model plugins."""
