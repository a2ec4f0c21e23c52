"""The engine: what runs in every rank of a built-in run (`python -m training.worker RUN_DIR`).

    rank_main    the entry point: environment -> build_trainer -> Trainer.run; exit codes, signals
    rank_setup   a rank set up: environment, device, process group, model, wrapping, optimizer
    trainer      the training loop: steps, the logging interval, validation, checkpoints, controls
    step_clock   the step anatomy's lap clock (perf_counter on CPU, CUDA events on GPU), the comm hook
    flops        FLOPs of one training sample, counted once at start (torch.utils.flop_counter)
    data         per-rank samplers and DataLoaders, batches onto the device
    checkpoint   the one checkpoint dict, written atomically
    resume       which checkpoint to resume from, weights before wrapping, then the training state
    amp          autocast that holds in DataParallel's threads, and whether this GPU can run it
    cuda_fit     can this torch use these GPUs (asked before a rank picks its device)
    export       ONNX export of a trained model, best effort
    fast_exit    leaving a worker without the interpreter's teardown
    hooks        test-only hooks read from the environment once at setup

The tasks it trains are in training/tasks. The engine reads its run directory through
training.rundir and reports through traindeck.report; it never imports the supervisor's or the
console's side.
"""
