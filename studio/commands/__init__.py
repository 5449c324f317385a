"""The bodies of the job commands (`python -m studio train | preprocess | estimate | export`): each reads a
config, owns its run folder (studio/runfolder) and calls the libraries (families, adapters, data,
train). Nothing below this package imports it."""
