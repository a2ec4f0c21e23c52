# Exec'd by train.py over its defaults (nanoGPT's "configurator" style): plain assignments.
max_iters = 60
eval_interval = 20
log_interval = 5
batch_size = 32
hidden = 32
learning_rate = 0.01
