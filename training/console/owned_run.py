"""`--control`, `--dump`, `--stop` and `--resume` act only on run directories that are yours.

Each of them acts on what a run directory says: --stop signals the processes run.json names,
--resume starts its profile.toml, --control and --dump reach its hosts over SSH. A directory
someone else made (a neighbour's in a runs directory others can write, one handed to you, or a
symlink to either) would have you act as you on their say-so. So the run directory, run.json
and profile.toml are looked at without following links, and each must be yours: owned by your
uid (root acts on root's own runs only, like anybody).

    check_owned_run(paths, doing="--stop")   raises RunNotYours, one paragraph with the fix
"""

from __future__ import annotations

import os
import stat

from training.errors import TraindeckError
from training.rundir.paths import RunPaths


class RunNotYours(TraindeckError):
    pass


def _owner_name(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def ownership_problem(paths: RunPaths) -> str | None:
    """Why this run directory is not yours to act on, or None."""
    me = os.geteuid()
    for path, what in ((paths.root, "the run directory"), (paths.run_json, "its run.json"),
                       (paths.profile, "its profile.toml")):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if path == paths.root:
                return f"{what} {path} does not exist"
            continue
        except OSError as exc:
            return f"{what} {path} cannot be looked at ({exc.strerror or exc})"
        if stat.S_ISLNK(st.st_mode):
            return f"{what} {path} is a symbolic link (to {os.readlink(path)!r}), not the run's own file"
        if st.st_uid != me:
            return f"{what} {path} belongs to {_owner_name(st.st_uid)}, not to you ({_owner_name(me)})"
        if path != paths.root and not stat.S_ISREG(st.st_mode):
            return f"{what} {path} is not a regular file"
    return None


def check_owned_run(paths: RunPaths, doing: str) -> None:
    problem = ownership_problem(paths)
    if problem:
        raise RunNotYours(
            f"{doing} refused for run {paths.id}: {problem}. {doing} acts on what the run directory says (the "
            f"processes run.json names, its profile's hosts and ssh options), so traindeck does it only for run "
            f"directories that are yours. If the run is yours under another account, run the command as that user "
            f"(sudo -u OWNER python run.py {doing} ...); if someone handed it to you, ask them to.")
