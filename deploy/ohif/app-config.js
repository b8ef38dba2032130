/** OHIF v3 as the stack's Orthanc serves it (deploy/ohif/build.mjs puts this file in build/).
 *
 * OHIF is served by Orthanc itself under /ohif/ (the ServeFolders plugin, configured by
 * radcloud.ops.stack.config), so its one data source is Orthanc's own DICOMweb on the same
 * origin: no CORS, no proxy, and the browser sends the Orthanc login it already gave (HTTP
 * Basic, Orthanc's own users) to /dicom-web as to /ohif/. radcloud's UI never links here with
 * credentials; this is the PACS's viewer, reached like the rest of Orthanc.
 *
 * The data source follows what Orthanc's DICOMweb plugin (1.7 in Debian 12) answers: no
 * includefield, no fuzzy matching, bulk data URIs relative to the study; instances in the
 * transfer syntax they are stored in (OHIF decodes JPEG, JPEG 2000, JPEG-LS, RLE, HTJ2K).
 */
window.config = {
  name: 'radcloud-orthanc',
  routerBasename: '/ohif',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc DICOMweb',
        name: 'orthanc',
        wadoUriRoot: '/dicom-web',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: true,
        singlepart: 'bulkdata,video',
        acceptHeader: ['multipart/related; type=application/octet-stream; transfer-syntax=*'],
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
