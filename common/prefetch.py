"""Read ahead: the one place where loading the next items overlaps the work on the current one (training's
batches; videos are decoded ahead by faces/workers.py's processes)."""
from concurrent.futures import ThreadPoolExecutor


def read_ahead(iterable, ahead):
    """Yield the items of `iterable` in order, computing up to `ahead` of them beyond the one in use in a
    background thread (FFmpeg, PyTorch and file reads release the GIL, so the two overlap). ahead=0
    computes each item when it is due."""
    if ahead <= 0:
        yield from iterable
        return
    iterator, end = iter(iterable), object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix='prefetch') as pool:
        pending = [pool.submit(next, iterator, end) for _ in range(ahead)]
        while True:
            item = pending.pop(0).result()
            if item is end:
                return
            pending.append(pool.submit(next, iterator, end))
            yield item
