"""Vector services on embedding and rerank models: embeddings, rerank and moderations."""
