"""The loop every steppable method shares: step until done, a progress bar, a callback, files."""
from __future__ import annotations

__all__ = ["run_steps"]


def run_steps(method, total: int, keep_going, *, desc: str, unit: str, postfix=None, progress: bool = True,
              callback=None, out_dir=None, prefix: str = "run") -> list:
    """Call ``method.step()`` while ``keep_going()``; a tqdm bar of ``total`` steps (``postfix(it)``
    its text) when ``progress``; ``callback(method, it)`` after each step; ``method.save(out_dir,
    prefix)`` at the end when ``out_dir`` is given. Returns ``method.history``."""
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max(int(total), 0), desc=desc, unit=unit)
    try:
        while keep_going():
            it = method.step()
            if bar is not None:
                bar.update(1)
                if postfix is not None:
                    bar.set_postfix_str(postfix(it))
            if callback is not None:
                callback(method, it)
    finally:
        if bar is not None:
            bar.close()
    if out_dir is not None:
        method.save(out_dir, prefix)
    return method.history
