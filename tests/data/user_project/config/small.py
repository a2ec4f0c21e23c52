# Exec'd by training/loop.py (nanoGPT's configurator style): plain assignments.
steps = 6
lr = 0.1
