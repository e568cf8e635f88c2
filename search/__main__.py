from .runtime import quiet_libraries

quiet_libraries()  # before anything imports TensorFlow
from .cli import main  # noqa: E402

raise SystemExit(main())
