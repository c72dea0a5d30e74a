"""vLLM's CI image build (docker/Dockerfile) as a Dagger module with a registry stage cache."""
