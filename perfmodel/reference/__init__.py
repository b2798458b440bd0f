"""perfmodel.reference: a transformer built from perfmodel's own kernels that runs every decoding method.

Its kernel launches are the op list: :class:`Recorder` hears every launch (op kind, name, shape), and the
tests compare them with :func:`perfmodel.workload.passes.build_passes` / :func:`perfmodel.workload.layers.pass_ops`
for the same scenario; :mod:`perfmodel.validation.e2e` times its steps and runs against the prediction.
Importing this package imports torch.
"""
from perfmodel.reference.recorder import Launch, Recorder, named, pass_section, untracked
from perfmodel.reference.runner import PassTime, Reference, RunResult, check_supported

__all__ = ["Launch", "PassTime", "Recorder", "Reference", "RunResult", "check_supported", "named", "pass_section",
           "untracked"]
