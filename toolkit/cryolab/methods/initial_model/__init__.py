"""Initial 3D models from the particles alone (RELION's ``relion_refine --denovo_3dref --sgd``).

>>> from cryolab.methods.initial_model import InitialModel, SGDSchedule
>>> SGDSchedule().n_iter
90
"""
from .schedule import InitialModelIteration, SGDSchedule, ScheduleStep
from .stochastic import InitialModel, centre_map, initial_model, starting_maps

__all__ = ["InitialModel", "InitialModelIteration", "SGDSchedule", "ScheduleStep", "centre_map",
           "initial_model", "starting_maps"]
