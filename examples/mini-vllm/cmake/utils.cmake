# Helpers shared by CMakeLists.txt (vLLM keeps similar helpers in cmake/utils.cmake).

# Apply the project's warning, optimisation and version flags to a target.
function(vllm_set_compile_flags TARGET VERSION)
  target_compile_features(${TARGET} PRIVATE c_std_99)
  target_compile_options(${TARGET} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  target_compile_definitions(${TARGET} PRIVATE MINI_VLLM_OPS_VERSION="${VERSION}")
endfunction()
