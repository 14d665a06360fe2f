"""The pepr measurement agent: train timm models, measure their resources, record runs.

Run `python -m agent run --help`. Everything torch-related lives here; the core `pepr`
package never imports torch.
"""
