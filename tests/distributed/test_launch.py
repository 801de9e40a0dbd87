"""The driver side of a distributed fit: how Ray's failures are told in one line, and which
of Ray's own lines reach the terminal."""

from __future__ import annotations

from raybm.distributed.launch import _cause


class ControllerError(Exception):
    """Shaped as Ray Train's: the failure that ended the controller is an attribute."""

    def __init__(self, failure: BaseException):
        super().__init__("Training failed due to controller error")
        self.controller_failure = failure


class StartupTimeout(Exception):
    pass


class WorkerFailed(Exception):
    pass


def test_a_plain_message_is_told_by_its_first_sentence():
    err = ControllerError(StartupTimeout(
        "The worker group startup timed out after 15.0 seconds waiting for 2 workers. "
        "Potential causes include:\n(1) insufficient resources\n(2) a slow image pull"))
    assert _cause(err) == ("StartupTimeout: The worker group startup timed out after 15.0 "
                           "seconds waiting for 2 workers")


def test_a_remote_traceback_is_told_by_its_exception_line():
    err = WorkerFailed("Worker rank 1 failed:\nTraceback (most recent call last):\n"
                       '  File "worker.py", line 3, in step\n    raise RuntimeError\n'
                       "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB")
    assert _cause(err) == "WorkerFailed: RuntimeError: CUDA out of memory"


def test_an_empty_message_names_the_type():
    assert _cause(ControllerError(StartupTimeout())) == "StartupTimeout: "



def test_the_preemption_watcher_line_stays_off_the_terminal_and_errors_do_not(ray_session,
                                                                             capfd):
    """Ray Train's controller starts Ray's PreemptionWatcher (restartable, the workers' actor
    handles among its arguments), and Ray's core worker logs the ``max_restarts > 0`` line in
    the controller's process; forwarded to this driver it is dropped (``start_ray`` set the
    filter), while another error line of that process still arrives."""
    import time

    import ray

    @ray.remote(num_cpus=0)
    class Controller:
        def start_watcher(self) -> None:
            """As Ray Train's PreemptionCallback does at a worker group's start."""
            import sys

            from ray.train.v2._internal.execution.preemption import PreemptionWatcher

            @ray.remote(num_cpus=0)
            class Worker:
                def ping(self) -> int:
                    return 1

            worker = Worker.remote()
            ray.get(worker.ping.remote())
            watcher = ray.remote(num_cpus=0, max_restarts=-1)(PreemptionWatcher).remote(
                node_to_ranks={"node": [0]}, poll_interval_s=60.0,
                worker_actors_by_rank={0: worker})
            ray.get(watcher.get_latest_preemption_info.remote())
            print("raybm-test: a real error after the watcher started", file=sys.stderr,
                  flush=True)
            ray.kill(watcher)
            ray.kill(worker)

    capfd.readouterr()
    controller = Controller.remote()
    ray.get(controller.start_watcher.remote())
    err = ""
    deadline = time.time() + 60
    while "raybm-test: a real error" not in err and time.time() < deadline:
        time.sleep(0.5)  # Ray's log monitor forwards worker lines every few hundred ms
        err += capfd.readouterr().err
    assert "raybm-test: a real error after the watcher started" in err
    assert "max_restarts > 0" not in err
    ray.kill(controller)
