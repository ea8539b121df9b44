"""Workflows: steps chained, side by side, fanned in, or any graph
(``canvas``), run by the control plane."""

from fastworker.workflows.canvas import Chain as Chain
from fastworker.workflows.canvas import Group as Group
from fastworker.workflows.canvas import Signature as Signature
from fastworker.workflows.canvas import StepRef as StepRef
from fastworker.workflows.canvas import StepSpec as StepSpec
from fastworker.workflows.canvas import Workflow as Workflow
from fastworker.workflows.canvas import chain as chain
from fastworker.workflows.canvas import chord as chord
from fastworker.workflows.canvas import group as group
from fastworker.workflows.canvas import steps as steps
from fastworker.workflows.starting import periodic as periodic

__all__ = ["Chain", "Group", "Signature", "StepRef", "StepSpec", "Workflow", "chain", "chord",
           "group", "periodic", "steps"]
