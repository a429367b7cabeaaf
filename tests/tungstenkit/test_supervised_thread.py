"""A long-lived thread never dies silently: what ends it is logged, and the process ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tungstenkit._supervised_thread import EXIT_THREAD_FAILED


def test_a_thread_that_dies_ends_its_process_with_a_traceback_and_a_non_zero_code() -> None:
    program = textwrap.dedent(
        """
        import logging, threading
        from tungstenkit._supervised_thread import SupervisedThread

        class Broken(SupervisedThread):
            def loop(self):
                raise KeyError("lost")

        logging.basicConfig()
        Broken("broken").start()
        threading.Event().wait(30)  # the main thread would go on forever
        """
    )
    done = subprocess.run([sys.executable, "-c", program], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_THREAD_FAILED
    assert "Thread broken died: KeyError: 'lost'" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
