"""`make bench` (`python -m bench`): the app's performance figures, measured in one run.

Never deployed (listed in .funcignore). Each figure is printed as one line that starts with its
name, then the value and the target in parentheses, then `met` or `MISSED`; detail lines follow,
indented. `BENCH_QUICK=1` (or `--quick`) runs a short version of every measurement.
"""
