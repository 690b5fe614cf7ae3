"""pmtrec-lab: personalized multi-task training for recommender systems.

Implements PMTRec (Yang et al., "Personalized Multi-task Training for Recommender System",
arXiv 2407.21364) beside the strongest multi-task baselines, on DGL graph encoders, with
notebooks and papermill reports. See README.md for a tour.
"""

__version__ = "0.1.0"
