"""Offline tools: training, corpus, evaluation and benchmarks. Serving code never imports them."""
