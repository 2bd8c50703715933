"""contrastkit: contrastive representation learning as one coherent toolkit."""

from contrastkit import functional, losses
from contrastkit.registry import create_loss, list_losses, loss_info, register_loss

__version__ = "0.1.0"
__all__ = ["create_loss", "functional", "list_losses", "loss_info", "losses", "register_loss"]
