/* stub: being written */
#include "autoconfig.h"
extern int config_stub_;
int config_stub_;
