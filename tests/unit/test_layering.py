"""The house has no stairs running up: lib/ never imports a service, no service imports another,
and no modules import each other in a circle (scripts/import_graph.py draws the graph)."""

from __future__ import annotations

from pathlib import Path

from scripts.import_graph import build_graph


def test_no_module_under_lib_imports_a_service_package() -> None:
    upward = build_graph().upward()
    assert upward == [], "lib/ imports services (move what is shared into lib/): " + ", ".join(
        f"{source} -> {target}" for source, target in upward
    )


def test_no_service_imports_another_services_package() -> None:
    assert build_graph().across() == []


def test_the_client_package_needs_nothing_of_candor_but_the_generated_api() -> None:
    # candor-client is installed by integrations that run none of Candor: it may import only the
    # generated API (candor.*) and itself.
    graph = build_graph()
    leaks = sorted(
        (source, target)
        for source, targets in graph.imports.items()
        if graph.modules[source].package == "candor_client"
        for target in targets
        if graph.modules[target].package not in ("candor", "candor_client")
    )
    assert "candor_client.gateway" in graph.modules
    assert leaks == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert build_graph().circles() == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_check_names_a_lib_module_that_imports_a_service_even_inside_a_function(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "gen/candor/__init__.py": "",
            "lib/candor_kit/__init__.py": "",
            "lib/candor_kit/tokens.py": "def issue():\n    from candor_gateway.access import require\n",
            "lib/candor_cli/__init__.py": "from candor_kit import tokens\n",
            "services/gateway/candor_gateway/__init__.py": "",
            "services/gateway/candor_gateway/access.py": "from candor_kit.tokens import issue\n",
            "services/review/candor_review/__init__.py": "from candor_gateway import access\n",
        },
    )
    graph = build_graph(root)
    assert graph.upward() == [("candor_kit.tokens", "candor_gateway.access")]
    assert graph.across() == [("candor_review", "candor_gateway.access")]
    # tokens -> access -> tokens: the upward import closes a circle as well.
    assert graph.circles() == [["candor_gateway.access", "candor_kit.tokens"]]


def test_a_package_that_imports_its_own_modules_is_no_circle_unless_they_import_it_back(tmp_path: Path) -> None:
    files = {
        "gen/candor/__init__.py": "",
        "lib/candor_kit/__init__.py": "from candor_kit.errors import Oops\n",
        "lib/candor_kit/errors.py": "class Oops(Exception): ...\n",
        "lib/candor_kit/bus.py": "from candor_kit import errors\nfrom . import errors as again\n",
        "services/gateway/candor_gateway/__init__.py": "",
    }
    assert build_graph(_write(tmp_path / "plain", files)).circles() == []
    files["lib/candor_kit/errors.py"] = "from candor_kit import bus\n"
    files["lib/candor_kit/__init__.py"] = "from candor_kit.bus import x\n"
    files["lib/candor_kit/bus.py"] = "from candor_kit import Oops\n"
    assert build_graph(_write(tmp_path / "circle", files)).circles() == [["candor_kit", "candor_kit.bus"]]
