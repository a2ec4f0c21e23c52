"""`--sweep section.key=v1,v2,...`: the grid of a sweep, each point type-checked like `--set`.

    grid = parse_sweeps(["train.lr=1e-3,3e-4", "train.batch_size=64,128"])   # [(key, values), ...]
    points = expand(grid)                     # [{"train.lr": "1e-3", "train.batch_size": "64"}, ...]
    check_points(base_text, base_path, sets, points)   # every point's profile parses, or ProfileError

A value is what `--set key=value` takes (a number, a word, true/false, a quoted string); values
are split on commas, so a list value cannot be swept. The points come in grid order, the last
`--sweep` changing fastest (as nested loops over the flags in the order given).
"""

from __future__ import annotations

import itertools

from training.profile import Profile, ProfileError, parse_override, parse_profile

MAX_POINTS = 1000  # a grid past this is a typo (a list of values pasted twice), not a sweep


def parse_sweeps(specs: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    grid: list[tuple[str, tuple[str, ...]]] = []
    for spec in specs:
        key, sep, values_text = spec.partition("=")
        key = key.strip()
        values = tuple(v.strip() for v in values_text.split(",") if v.strip())
        if not sep or not key or not values:
            raise ProfileError(f"--sweep '{spec}' must look like section.key=v1,v2,..., e.g. "
                               f"--sweep train.lr=1e-3,3e-4,1e-4.", path="--sweep")
        if any(k == key for k, _ in grid):
            raise ProfileError(f"--sweep {key} is given twice; list all its values in one flag "
                               f"(--sweep {key}=v1,v2,...).", path="--sweep")
        if len(set(values)) != len(values):
            raise ProfileError(f"--sweep '{spec}' repeats a value; each value is one run.", path="--sweep")
        for value in values:
            parse_override(f"{key}={value}")  # its syntax, as --set reads it
        grid.append((key, values))
    return grid


def expand(grid: list[tuple[str, tuple[str, ...]]]) -> list[dict[str, str]]:
    total = 1
    for _, values in grid:
        total *= len(values)
    if total > MAX_POINTS:
        raise ProfileError(f"--sweep: the grid has {total} points, more than {MAX_POINTS}; sweep fewer values.",
                           path="--sweep")
    keys = [k for k, _ in grid]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in grid))]


def point_overrides(sets: list[str] | tuple[str, ...], point: dict[str, str]) -> list[str]:
    """The --set items of one point: the base ones, then the point's (which win)."""
    return [*sets, *(f"{k}={v}" for k, v in point.items())]


def point_profile(base_text: str, base_path: str, point: dict[str, str]) -> Profile:
    return parse_profile(base_text, path=base_path, overrides=point_overrides((), point))


def check_points(base_text: str, base_path: str, points: list[dict[str, str]]) -> list[Profile]:
    """Every point's profile, type-checked as a start would be: a bad value is refused before
    the first run starts, naming the --sweep value (the profile's own message says what is wrong)."""
    profiles = []
    for point in points:
        try:
            profiles.append(point_profile(base_text, base_path, point))
        except ProfileError as exc:
            shown = " ".join(f"{k}={v}" for k, v in point.items())
            raise ProfileError(f"the point {shown} is refused: {exc}", path="--sweep") from None
    return profiles
