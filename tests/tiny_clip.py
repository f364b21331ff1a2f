"""A tiny randomly initialised CLIP (transformers), saved as a folder the way users hold real ones."""

import torch


def save_clip(folder, seed=0, image_size=32, projection_dim=16):
    """CLIPModel + tokenizer + image processor in ``folder``; loads with ``flickerless.metrics.load_clip``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from tests.tiny_models import tokenizer

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=12, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=projection_dim,
    )
    CLIPModel(cfg).eval().save_pretrained(folder)
    tokenizer(str(folder) + "_tok").save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return str(folder)
