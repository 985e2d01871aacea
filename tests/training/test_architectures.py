"""Every tutorial architecture reproduces the tutorial's parameter count exactly."""

from __future__ import annotations

import pytest
from training.tasks import TASKS, TaskError, get_task

TUTORIAL_PARAMETERS = {
    ("mnist", "tutorial"): 628_630,
    ("mnist", "tutorial-004"): 1_199_882,
    ("cifar10", "tutorial"): 430_102,
    ("cifar10", "tutorial-003"): 552_874,
    ("homer_bart", "tutorial"): 13_486_535,
    ("blood_cells", "tutorial"): 10_250_788,
    ("faces", "tutorial"): 635_170,
}
CLASS_COUNTS = {"mnist": 10, "cifar10": 10, "homer_bart": 2, "blood_cells": 4, "faces": 2}


@pytest.mark.parametrize(("task", "arch"), list(TUTORIAL_PARAMETERS))
def test_tutorial_parameter_counts(task: str, arch: str):
    spec = get_task(task)
    architecture = spec.arch(arch)
    model = architecture.build(spec.preprocessing_for(architecture).input_shape, CLASS_COUNTS[task])
    assert model.count_params() == TUTORIAL_PARAMETERS[(task, arch)]


@pytest.mark.parametrize("task", list(TASKS))
def test_every_architecture_builds_a_softmax_over_the_classes(task: str):
    spec = get_task(task)
    for architecture in spec.architectures.values():
        shape = spec.preprocessing_for(architecture).input_shape
        model = architecture.build(shape, CLASS_COUNTS[task])
        assert tuple(model.input_shape[1:]) == shape
        assert model.output_shape[-1] == CLASS_COUNTS[task]


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(TaskError, match="valid: blood_cells, cifar10, faces, homer_bart, mnist"):
        get_task("imagenet")
    with pytest.raises(TaskError, match="valid: cnn, cnn3, strided, tiny, tutorial, tutorial-004"):
        get_task("mnist").arch("vgg16")
