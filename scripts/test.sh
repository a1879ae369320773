#!/usr/bin/env bash
# The test suite on a fresh machine: set-up first (idempotent), then pytest twice: the whole suite on ROS 2
# Kilted (.venv), then the tests that touch ROS (test/ros, test/fleet) on ROS 2 Jazzy (.venv-jazzy).
# Arguments go to both runs. Test paths among them choose what runs: Kilted runs them all, Jazzy those
# under test/ros or test/fleet (none of them: no Jazzy run). Exits non-zero if either run fails (5 when
# nothing ran, as pytest does).
#   OVSS_TEST_DISTROS="kilted"   only one distribution (default "kilted jazzy")
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DISTROS=${OVSS_TEST_DISTROS:-kilted jazzy}
JAZZY_TESTS=(test/ros test/fleet)
say() { printf '[test] %s\n' "$*"; }
cd "$ROOT"

# Split the arguments: a test path (file or folder, with or without ::node) or an option (with its value).
valued=" -k -m -p -c -o -W --deselect --ignore --ignore-glob --rootdir --confcutdir --basetemp "   # take a value
valued+="--durations --maxfail --junitxml --junit-xml --log-file --tb --capture --import-mode --override-ini "
options=() paths=() jazzy_paths=() value_next=0
for arg in "$@"; do
  if [ $value_next = 1 ]; then
    options+=("$arg"); value_next=0
  elif [[ $arg == -* ]]; then
    options+=("$arg")
    [[ $valued == *" $arg "* ]] && value_next=1
  elif [[ -e ${arg%%::*} ]]; then
    paths+=("$arg")
    for under in "${JAZZY_TESTS[@]}"; do
      rel=$(realpath -m --relative-to="$ROOT" "${arg%%::*}")
      if [[ $rel == "$under" || $rel == "$under"/* ]]; then jazzy_paths+=("$arg"); break; fi
    done
  else
    options+=("$arg")
  fi
done
if [ ${#paths[@]} -eq 0 ]; then jazzy_paths=("${JAZZY_TESTS[@]}"); fi

declare -A status
for distro in $DISTROS; do   # every environment first: a broken set-up fails before any test runs
  case $distro in
    kilted|jazzy) bash scripts/setup.sh --distro "$distro" || exit 1 ;;
    *) say "ERROR: OVSS_TEST_DISTROS: unknown distribution '$distro' (kilted, jazzy)"; exit 2 ;;
  esac
done
for distro in $DISTROS; do
  case $distro in
    kilted) venv=.venv; targets=(${paths[@]+"${paths[@]}"}) ;;
    jazzy) venv=.venv-jazzy; targets=(${jazzy_paths[@]+"${jazzy_paths[@]}"})
      if [ ${#paths[@]} -gt 0 ] && [ ${#targets[@]} -eq 0 ]; then
        say "ROS 2 jazzy: none of the given paths is under ${JAZZY_TESTS[*]}; not run"
        continue
      fi ;;
  esac
  say "ROS 2 $distro: pytest ${options[*]-} ${targets[*]-}"
  start=$SECONDS
  "$venv/bin/python" -m pytest ${options[@]+"${options[@]}"} ${targets[@]+"${targets[@]}"}
  rc=$?
  if [ "$distro" = jazzy ] && [ $rc -eq 5 ] && [ ${#options[@]} -gt 0 ]; then
    rc=0; say "ROS 2 jazzy: the options given select none of its tests"   # e.g. -k naming engine tests only
  fi
  status[$distro]="exit $rc, $((SECONDS - start)) s"
done

failed=0 summary=""
for distro in $DISTROS; do
  [ -n "${status[$distro]+x}" ] || continue
  summary+="${summary:+; }ROS 2 $distro: ${status[$distro]}"
  [[ ${status[$distro]} == "exit 0,"* ]] || failed=1
done
if [ -z "$summary" ]; then say "no test run"; exit 5; fi   # pytest's code for "no tests collected"
say "$summary"
exit $failed
