"""LoRA on the Qwen3-VL language model (peft): adapters in, and folded back into plain layers for export."""

from __future__ import annotations

from collections.abc import Sequence

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(model, rank: int = 16, alpha: float = 32.0, targets: Sequence[str] = LORA_TARGETS) -> int:
    """Inject LoRA adapters (peft) into the language model's linear layers, in place; freeze the rest.

    Only the adapters train afterwards; ``lora_B`` starts at zero, so the model's outputs are
    unchanged until the first update. Returns the number of trainable parameters.
    """
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0),
                            model.model.language_model)
    trainable = 0
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
        trainable += p.numel() if p.requires_grad else 0
    if trainable == 0:
        raise ValueError(f"LoRA matched no layer of the language model (targets {list(targets)})")
    return trainable


def merge_lora(model) -> int:
    """Fold every LoRA adapter into its base weight and put the plain layer back (in place)."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
                merged += 1
    return merged
