"""VLM/LLM serving calculators: OpenAI requests, images, templating, generation, responses."""
