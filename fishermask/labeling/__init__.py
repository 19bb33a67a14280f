"""A real labeling round from files (``fishermask select``): the folder, the labels so far, the
next batch to label."""
