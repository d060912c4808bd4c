"""Your own points in and out: reading tables (`points`), fitting them into the model's box and
choosing a subset (`rescale`), and real example data sets (`examples`)."""
