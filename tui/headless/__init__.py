"""The headless printer: plain progress lines from a run directory, and the run's exit code.

    follow(paths)                          # attach: Ctrl-C detaches, the run keeps going
    follow(paths, stop_on_interrupt=True)  # run.py --headless: Ctrl-C stops the run

What it prints (plain text, no ANSI, flushed line by line so `| tee` and CI logs keep up):

    [00:42] epoch 2/4 step 180 loss 0.8123 (conflict 0.41 entropy 0.12) val_loss 0.79 | 5012 samples/s | cpu w0 98% 410M w1 97% 405M
    [00:42] epoch 2/4 step 180 loss 0.8123 | 5012 samples/s | gpu 0-7 util 97/96/97/95/97/96/97/96 mem 81/183G 61C
    checkpoint best.pt epoch 3 step 900 val_loss 1.87 best 1.2 MiB in 0.40 s
    epoch 2/4 done in 35.2 s, 5,012 samples/s, loss 0.8123, val_loss 0.79
    warning: <message>            error: [rank 1] <message>           status running: <message>
    run 20261124-183000-cpu finished: 4/4 epochs, 256 steps, best val_loss 0.79 (epoch 3), 2m05s
      run dir: runs/20261124-183000-cpu

A progress line is printed once per interval when something moved (a metric, or rank 0's
output: a custom script that reports no step still gets its line every interval, showing the
last thing it printed), and every STALL_REPEAT_S otherwise (saying for how long nothing moved). A finished run prints its
checkpoints, epochs and warnings compactly, then the summary. Everything comes from files
(events.jsonl, telemetry.jsonl, run.json, exit.json) through the feed (tui.feed) into the one run
model (tui.run_model): the printer never computes training state.

    lines      the text: progress line, event lines (the shared describer), telemetry, summary
    follower   the loop: Follower, follow(), Ctrl-C (stop or detach)
"""

from tui.headless.follower import EXIT_JSON_WAIT_S, START_TIMEOUT_S, Follower, follow
from tui.headless.lines import (
           HEALTH_EXIT,
           STALL_REPEAT_S,
           event_line,
           exit_code,
           fmt_telemetry,
           progress_line,
)

__all__ = ["EXIT_JSON_WAIT_S", "HEALTH_EXIT", "START_TIMEOUT_S", "STALL_REPEAT_S", "Follower", "event_line", "exit_code",
           "fmt_telemetry", "follow", "progress_line"]
