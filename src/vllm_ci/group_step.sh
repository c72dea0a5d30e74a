# vllm-ci: upstream's build scripts as a Dagger module, pinned: the job runs in the engine, the agent posts its folder
vllm_ci_group() {
  local job=$1 out=vllm-ci-out/$1 item name argv="" env="" file="" config=$HOME/.docker flags=()
  for item in "$@"; do argv+=${argv:+,}\"${item//\"/\"\"}\"; done
  for name in @ENV_NAMES@; do
    if [[ -n ${!name:-} ]]; then item=${!name}; env+=${env:+,}\"$name=${item//\"/\"\"}\"; fi
  done
  if [[ -n $env ]]; then flags+=(--env="$env"); fi
  case $job in @ARGS_FILES@ esac
  if [[ -n $file ]]; then flags+=(--args-file="$file"); fi
  if [[ -n ${DOCKER_CONFIG:-} ]]; then config=$DOCKER_CONFIG; fi
  config+=/config.json
  if [[ -f $config ]]; then flags+=(--docker-config="file:$config"); fi
  if [[ -n ${VLLM_CI_REGISTRY_SERVICE:-} ]]; then flags+=(--registry-service="$VLLM_CI_REGISTRY_SERVICE"); fi
  rm -rf "$out"
  dagger --progress=plain call -m '@MODULE@' group-job --source="${VLLM_CI_SOURCE:-.}" --job="$argv" "${flags[@]}" export --path="$out"
  buildkite-agent annotate --append --style info --context @IMAGES_CONTEXT@ < "$out/images.md"
  if [[ -f $out/annotation.md ]]; then
    buildkite-agent annotate --context "@ANNOTATION_CONTEXT@-$job" --style "$(< "$out/annotation.style")" < "$out/annotation.md"
    buildkite-agent artifact upload "$out/report.json;$out/annotation.md"
  fi
  if [[ -f $out/@SYMBOL_MAP@ ]]; then (cd "$out" && buildkite-agent artifact upload @SYMBOL_MAP@); fi
}