"""The six metrics of a model (profile) and the tables, JSON and plots that report them."""
