"""Compatibility fixes between TransformerLens and Hugging Face transformers versions.

TransformerLens 4.3's attention bridges look for the KV cache under ``past_key_values`` (or
``layer_past``), but transformers 5.24 renamed the argument its decoder layers pass to attention
to ``cache``. The bridge then ignores the cache: every cached decoding step attends only to
itself, and generation through a bridge (``TransformerBridge.generate`` or the wrapped Hugging
Face model) silently produces wrong text. :func:`patch_bridge_kv_cache` makes the bridge read
``cache`` too. It is idempotent, a no-op when the bridge already handles ``cache``, and
``tests/test_compat.py`` checks cached decoding against full recomputation on every family.
"""

from __future__ import annotations

from typing import Any

__all__ = ["patch_bridge_kv_cache"]

_PATCHED = "_hlens_kv_cache_patch"


def patch_bridge_kv_cache() -> bool:
    """Let TransformerLens attention bridges find a KV cache passed as ``cache=``.

    Returns:
        True if the patch is (now) installed, False if the bridge internals are not as expected
        (then nothing is changed).
    """
    try:
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    except ImportError:
        return False
    original = getattr(AttentionBridge, "_update_kv_cache", None)
    if original is None:
        return False
    if getattr(original, _PATCHED, False):
        return True

    def _update_kv_cache(self: Any, k: Any, v: Any, **kwargs: Any) -> Any:
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return original(self, k, v, **kwargs)

    setattr(_update_kv_cache, _PATCHED, True)
    _update_kv_cache.__doc__ = original.__doc__
    AttentionBridge._update_kv_cache = _update_kv_cache
    return True
