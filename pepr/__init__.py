"""pepr: performance per resource unit (Selvan et al., NLDL 2025).

The core library: score math (`pepr.score`), the DuckDB run store (`pepr.store`) and the
importer of the paper's published results (`pepr.paper`). It never imports torch.
"""

__version__ = "0.1.0"
