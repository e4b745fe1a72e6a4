# The lab of "Autoscaling Jobs using KEDA and Service Bus", as native resources: a Container Apps job that
# KEDA starts when a message lands on a Service Bus queue, its image built in ACR from this repository.

data "azurerm_client_config" "current" {}

# Registry and Service Bus names are global; a random suffix lets many participants run the lab at once.
resource "random_string" "suffix" {
  length  = 6
  upper   = false
  special = false
}

locals {
  suffix = random_string.suffix.result
  names = {
    resource_group = "rg-${var.name_prefix}-${local.suffix}"
    log_analytics  = "log-${var.name_prefix}-${local.suffix}"
    environment    = "cae-${var.name_prefix}-${local.suffix}"
    registry       = "acr${var.name_prefix}${local.suffix}"
    servicebus     = "sb-${var.name_prefix}-${local.suffix}"
    job_identity   = "id-job-${var.name_prefix}-${local.suffix}"
    scaler         = "id-scaler-${var.name_prefix}-${local.suffix}"
  }
  tags                 = merge({ "aca-job-lab" = "true" }, var.tags)
  scaler_uses_identity = var.scaler_auth == "managed_identity"
  # null: whoever runs terraform; "": nobody (coalesce would treat "" as missing, hence the explicit test).
  operator_object_id = var.operator_object_id == null ? data.azurerm_client_config.current.object_id : var.operator_object_id
}

resource "azurerm_resource_group" "lab" {
  name     = local.names.resource_group
  location = var.location
  tags     = local.tags
}

resource "azurerm_log_analytics_workspace" "lab" {
  name                = local.names.log_analytics
  location            = azurerm_resource_group.lab.location
  resource_group_name = azurerm_resource_group.lab.name
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = local.tags
}

resource "azurerm_container_app_environment" "lab" {
  name                = local.names.environment
  location            = azurerm_resource_group.lab.location
  resource_group_name = azurerm_resource_group.lab.name
  # On azurerm 5.x the workspace is only used when the destination says so.
  logs_destination           = "log-analytics"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.lab.id
  tags                       = local.tags
}
