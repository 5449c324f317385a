from studio.runfolder.console import quiet_import_noise

quiet_import_noise()  # before any library import prints its optional-extension warnings

from studio.cli import main  # noqa: E402

raise SystemExit(main())
