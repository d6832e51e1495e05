"""Build hook (issue 19): the web pages' gettext catalogs are compiled while the wheel is built.

Everything else about the package is in pyproject.toml. ``build_py`` copies the ``.po`` files as
package data (pyproject.toml), then each is compiled into a ``.mo`` beside it in the build tree
with Babel, so an installed node reads compiled catalogs. A checkout (editable install, tests)
has no ``.mo`` files and reads the ``.po`` files instead (node/http/i18n.py).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithCatalogs(build_py):
    def run(self) -> None:
        super().run()
        (Path(self.build_lib) / "fabnode" / "setup.py").unlink(missing_ok=True)  # the root is the package: not a module
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        for po in Path(self.build_lib).glob("fabnode/node/http/locale/*/LC_MESSAGES/*.po"):
            with open(po, "rb") as f:
                catalog = read_po(f, locale=po.parent.parent.name, domain=po.stem)
            with open(po.with_suffix(".mo"), "wb") as f:
                write_mo(f, catalog)


setup(cmdclass={"build_py": BuildWithCatalogs})
