"""The engine: what runs in every rank of a built-in run (`python -m training.worker RUN_DIR`).

worker (the entry point and the training loop), checkpoint (the one checkpoint dict, written
atomically), export (ONNX), amp (autocast that holds in DataParallel's threads). The tasks it trains
are in training/tasks. The engine reads its run directory through training.rundir and reports
through traindeck.report; it never imports the supervisor's or the console's side.
"""
