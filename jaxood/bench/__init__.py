"""Benchmarks: `python -m jaxood.bench.<name>`."""

# ViT-B/16 as in openai/clip-vit-base-patch16's config.json: Hugging Face `CLIPConfig` arguments for the benchmarks
# and tests that build one with random weights.
VIT_B16 = dict(
    text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
    vision_config=dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
    ),
    projection_dim=512,
)
