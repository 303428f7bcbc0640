/* stub: being written */
#include "autoconfig.h"
extern int clienthello_stub_;
int clienthello_stub_;
