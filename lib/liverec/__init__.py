"""liverec: real-time personalised recommendations on Spark, Delta, MLflow and PyTorch."""

__version__ = "0.1.0"
