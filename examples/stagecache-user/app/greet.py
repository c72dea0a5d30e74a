"""The application the `app` stage packages: it only needs what `deps` installed."""

import six


def greeting(name: str) -> str:
    return six.ensure_str(f"hello, {name}")


if __name__ == "__main__":
    print(greeting("stage cache"))
