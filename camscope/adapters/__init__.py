"""Model adapters: what camscope needs to know about models that are not plain classifiers.

`camscope.adapters.hf` (Hugging Face ``transformers`` image classifiers) is model knowledge
only: it imports no other camscope module and ``transformers`` only when loading, so
`camscope.models` and `camscope.methods` may use it. Importing this package imports nothing.
"""
