"""The console's side: what run.py and the TUI call to start, find, stop and check runs.

runs (start/resume/stop/find/list, reap orphans), preflight (--check, --list), stackdump (--dump),
rehearse (--rehearse and the picker's rehearse key), gpu_check (--gpu-check). These modules run in
the console's process; nothing in the engine, the monitor or the supervisor imports them.
"""
