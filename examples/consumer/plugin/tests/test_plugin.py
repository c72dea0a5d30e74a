"""The plugin, in the image vllm-ci built: vLLM is importable, with its compiled extension,
and the plugin is found the way vLLM finds plugins (entry points)."""

import importlib.metadata
import unittest

import vllm


class PluginTest(unittest.TestCase):
    def test_vllm_is_installed_with_its_extension(self):
        self.assertTrue(vllm.__version__)
        self.assertTrue(hasattr(vllm.native_ops(), "__file__"))

    def test_entry_point_registers(self):
        (ep,) = [ep for ep in importlib.metadata.entry_points(group="vllm.general_plugins") if ep.name == "hello"]
        register = ep.load()
        register()
        import vllm_hello_plugin

        self.assertEqual(vllm_hello_plugin.REGISTERED, [f"hello from vllm {vllm.__version__}"])


if __name__ == "__main__":
    unittest.main()
