"""Peak resident memory of the running process, for the benchmarks' worker processes."""


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (VmHWM).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that across ``exec``, so a worker
    would report its parent's size when the parent was larger.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
